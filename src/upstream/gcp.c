#include "upstream/gcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "core/exchange.h"
#include "core/log.h"
#include "core/text.h"
#include "dialect/evstream.h"
#include "upstream/gcp_int.h"
#include "upstream/syncfetch.h"

#define DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define DEFAULT_METADATA_HOST "169.254.169.254"  /* metadata.google.internal, without needing its DNS */
#define METADATA_PATH "/computeMetadata/v1/"

/* ---- the key file ---- */

static EVP_PKEY *load_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

const char *kl_gcp_field(const cJSON *o, const char *k)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return v && *v ? v : NULL;
}

/* The assertion keyless signs is sent to token_uri, and anyone who reads it
 * on the way can exchange it for the account's tokens for an hour: only
 * https, or plain http to this machine (a local emulator, the tests). */
bool kl_gcp_url_safe(const char *u)
{
    if (strncasecmp(u, "https://", 8) == 0)
        return true;
    if (strncasecmp(u, "http://", 7) != 0)
        return false;
    const char *h = u + 7;
    if (memchr(h, '@', strcspn(h, "/?#")))
        return false; /* "http://localhost:80@elsewhere/": the host is elsewhere */
    size_t n = strcspn(h, ":/?#");
    if (h[0] == '[')
        return strncmp(h, "[::1]", 5) == 0 && strchr(":/?#", h[5]);
    char host[16];
    struct in_addr ip;
    if (n == 9 && strncasecmp(h, "localhost", 9) == 0)
        return true;
    if (n >= sizeof(host))
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    return inet_pton(AF_INET, host, &ip) == 1 && (ntohl(ip.s_addr) >> 24) == 127;
}

/* Leading white space and a UTF-8 byte order mark, as editors leave them. */
static const char *skip_space(const char *s)
{
    if (strncmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
        s++;
    return s;
}

/* "gcp-metadata" or "gcp-metadata:ACCOUNT": the metadata server's token for
 * the VM's (or, on GKE with workload identity, the pod's) service account.
 * Nothing secret is sent to ask for it, so the server is plain http, as on
 * every Google VM. */
static int metadata_parse(const char *text, const char *host, kl_arena *a, struct kl_gcp_cred *out,
                          const char **why)
{
    const char *acct = text[12] == ':' ? text + 13 : "default";
    size_t n = strlen(acct);
    if (!n || n > 256 ||
        strspn(acct, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-") != n) {
        *why = "gcp-metadata:ACCOUNT must name the metadata server's account: default, or a service account's email";
        return -1;
    }
    host = host && *host ? host : DEFAULT_METADATA_HOST;
    if (strcspn(host, "/?#@ \t\r\n\\") != strlen(host)) {
        *why = "GCE_METADATA_HOST must be a host or host:port";
        return -1;
    }
    out->source = KL_GCP_METADATA;
    out->email = kl_arena_concat(a, "metadata:", acct, NULL);
    out->token_uri = kl_arena_concat(a, "http://", host, METADATA_PATH "instance/service-accounts/", acct,
                                     "/token?scopes=" KL_GCP_SCOPE, NULL);
    return 1;
}

/* Fields of a service account's key file. */
static int service_account_parse(const cJSON *o, kl_arena *a, struct kl_gcp_cred *out, const char **why)
{
    if (!kl_gcp_field(o, "client_email") || !kl_gcp_field(o, "private_key")) {
        *why = "the service account key file has no client_email or private_key";
        return -1;
    }
    if (kl_gcp_field(o, "token_uri") && !kl_gcp_url_safe(kl_gcp_field(o, "token_uri"))) {
        *why = "the service account key file's token_uri must be https:// (or http:// to this machine): the signed "
               "assertion sent there is a credential";
        return -1;
    }
    EVP_PKEY *k = load_key(kl_gcp_field(o, "private_key"));
    if (!k || EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
        *why = k ? "the service account key file's private_key is not an RSA key (Google signs with RS256)"
                 : "the service account key file's private_key is not a PEM private key";
        EVP_PKEY_free(k);
        return -1;
    }
    EVP_PKEY_free(k);
    out->source = KL_GCP_SERVICE_ACCOUNT;
    out->email = kl_arena_strdup(a, kl_gcp_field(o, "client_email"));
    out->key_id = kl_gcp_field(o, "private_key_id") ? kl_arena_strdup(a, kl_gcp_field(o, "private_key_id")) : NULL;
    const char *uri = kl_gcp_field(o, "token_uri");
    out->token_uri = kl_arena_strdup(a, uri ? uri : DEFAULT_TOKEN_URI);
    out->private_key = kl_arena_strdup(a, kl_gcp_field(o, "private_key"));
    out->project_id = kl_gcp_field(o, "project_id") ? kl_arena_strdup(a, kl_gcp_field(o, "project_id")) : NULL;
    return 1;
}

/* gcloud's application default credentials of a user ("gcloud auth
 * application-default login"). Their quota_project_id is the project
 * billed for quota, not the one a resource lives in: Vertex paths keep the
 * caller's project, within what the user may use. */
static int authorized_user_parse(const cJSON *o, kl_arena *a, struct kl_gcp_cred *out, const char **why)
{
    if (!kl_gcp_field(o, "client_id") || !kl_gcp_field(o, "client_secret") || !kl_gcp_field(o, "refresh_token")) {
        *why = "the authorized_user credentials file has no client_id, client_secret or refresh_token";
        return -1;
    }
    if (kl_gcp_field(o, "token_uri") && !kl_gcp_url_safe(kl_gcp_field(o, "token_uri"))) {
        *why = "the authorized_user credentials file's token_uri must be https:// (or http:// to this machine): the "
               "refresh token sent there is a credential";
        return -1;
    }
    out->source = KL_GCP_AUTHORIZED_USER;
    /* the client, not the user's login: this name goes into /metrics */
    out->email = kl_arena_concat(a, "authorized_user:", kl_gcp_field(o, "client_id"), NULL);
    const char *uri = kl_gcp_field(o, "token_uri");
    out->token_uri = kl_arena_strdup(a, uri ? uri : DEFAULT_TOKEN_URI);
    out->client_id = kl_arena_strdup(a, kl_gcp_field(o, "client_id"));
    out->client_secret = kl_arena_strdup(a, kl_gcp_field(o, "client_secret"));
    out->refresh_token = kl_arena_strdup(a, kl_gcp_field(o, "refresh_token"));
    return 1;
}

/* What an impersonated_service_account file's source_credentials may be,
 * into src: a user's (gcloud auth application-default login
 * --impersonate-service-account) or a service account's key. */
static int impersonation_source(const cJSON *o, kl_arena *a, struct kl_gcp_cred *src, const char **why)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "source_credentials");
    const char *type = kl_gcp_field(s, "type");
    memset(src, 0, sizeof(*src));
    int rc = -1;
    if (type && strcmp(type, "authorized_user") == 0)
        rc = authorized_user_parse(s, a, src, why);
    else if (type && strcmp(type, "service_account") == 0)
        rc = service_account_parse(s, a, src, why);
    else {
        *why = "the impersonated_service_account credentials file's source_credentials must be an authorized_user's "
               "or a service_account's";
        return -1;
    }
    if (rc < 0)
        *why = kl_arena_concat(a, "in the impersonated_service_account credentials file's source_credentials, ", *why,
                               NULL);
    return rc;
}

/* The source's secrets, parsed for a moment, wiped. */
static void wipe_source(struct kl_gcp_cred *src)
{
    const char *secret[] = {src->client_secret, src->refresh_token, src->private_key};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (secret[i])
            OPENSSL_cleanse((char *)secret[i], strlen(secret[i]));
}

/* gcloud's application default credentials that impersonate a service
 * account: the source's token for the account's (IAM credentials'
 * generateAccessToken). The file is kept whole, compact, and read again
 * for each token, as an external account's is. */
static int impersonated_parse(const cJSON *o, kl_arena *a, struct kl_gcp_cred *out, const char **why)
{
    /* the source is parsed to be checked, in an arena of its own: its
     * secrets are wiped, not left in the configuration's */
    struct kl_gcp_cred src;
    kl_arena scratch;
    kl_arena_init(&scratch);
    int rc = impersonation_source(o, &scratch, &src, why);
    if (rc < 0)
        *why = kl_arena_strdup(a, *why);
    wipe_source(&src);
    kl_arena_free(&scratch);
    if (rc < 0)
        return -1;
    const char *url = kl_gcp_field(o, "service_account_impersonation_url");
    const char *sa = url ? strstr(url, "/serviceAccounts/") : NULL;
    size_t n = sa ? strcspn(sa + strlen("/serviceAccounts/"), ":/?#") : 0;
    if (!n || !strstr(url, ":generateAccessToken")) {
        *why = "the impersonated_service_account credentials file needs a service_account_impersonation_url "
               "(https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ACCOUNT:generateAccessToken)";
        return -1;
    }
    if (!kl_gcp_url_safe(url)) {
        *why = "the impersonated_service_account credentials file's service_account_impersonation_url must be "
               "https:// (or http:// to this machine): the source's token is sent there";
        return -1;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "delegates");
    bool names = !d || cJSON_IsNull(d) || cJSON_IsArray(d); /* null: none, as Google's libraries read it */
    for (const cJSON *e = cJSON_IsArray(d) ? d->child : NULL; e; e = e->next)
        names = names && cJSON_IsString(e) && e->valuestring[0];
    if (!names) {
        *why = "the impersonated_service_account credentials file's delegates must be a list of service accounts";
        return -1;
    }
    char *doc = cJSON_PrintUnformatted(o);
    if (!doc)
        abort();
    out->source = KL_GCP_IMPERSONATED;
    out->email = kl_arena_printf(a, "impersonated:%.*s", (int)n, sa + strlen("/serviceAccounts/"));
    out->external = kl_arena_strdup(a, doc);
    OPENSSL_cleanse(doc, strlen(doc));
    free(doc);
    return 1;
}

int kl_gcp_cred_parse(const char *text, const char *metadata_host, kl_arena *a, struct kl_gcp_cred *out,
                      const char **why)
{
    memset(out, 0, sizeof(*out));
    text = skip_space(text);
    if (strncmp(text, "gcp-metadata", 12) == 0 && (text[12] == '\0' || text[12] == ':'))
        return metadata_parse(text, metadata_host, a, out, why);
    const char *json = text;
    size_t n = strlen(text);
    bool keyfile = strncmp(text, "keyfile::", 9) == 0;
    if (keyfile) {
        json = skip_space(text + 9);
        n = strlen(json);
        if (n && *json != '{') { /* the key file's base64, wrapped or not (base64(1) wraps at 76) */
            char *packed = kl_arena_alloc_raw(a, n + 1);
            size_t dl, pn = 0;
            for (size_t i = 0; i < n; i++)
                if (!strchr(" \r\n\t", json[i]))
                    packed[pn++] = json[i];
            json = kl_base64_decode(a, packed, pn, &dl);
            n = json ? dl : 0;
            if (!json) {
                *why = "keyfile:: must be followed by a service account key file's JSON or its base64";
                return -1;
            }
        }
    }
    json = n ? skip_space(json) : json;
    n = json ? strlen(json) : 0;
    if (!keyfile && (!n || json[0] != '{'))
        return 0; /* an ordinary key */
    cJSON *o = n && json[0] == '{' ? cJSON_ParseWithLength(json, n) : NULL;
    const char *type = kl_gcp_field(o, "type");
    /* Google's credentials files, used as one or refused, never sent as a
     * key; other JSON (a self-hosted server's token) is a key like any */
    static const char *const google[] = {"service_account", "authorized_user", "external_account",
                                         "external_account_authorized_user", "impersonated_service_account",
                                         "gdch_service_account"};
    bool is_google = false;
    for (size_t i = 0; type && i < sizeof(google) / sizeof(google[0]); i++)
        is_google |= strcmp(type, google[i]) == 0;
    if (!keyfile && !is_google) {
        cJSON_Delete(o);
        return 0;
    }
    int rc = -1;
    if (!cJSON_IsObject(o))
        *why = "the service account key file is not a JSON object";
    else if (type && strcmp(type, "service_account") == 0)
        rc = service_account_parse(o, a, out, why);
    else if (type && strcmp(type, "authorized_user") == 0)
        rc = authorized_user_parse(o, a, out, why);
    else if (type && strcmp(type, "external_account") == 0)
        rc = kl_gcp_external_parse(o, a, out, why);
    else if (type && strcmp(type, "impersonated_service_account") == 0)
        rc = impersonated_parse(o, a, out, why);
    else
        *why = kl_arena_printf(a, "apikey holds a Google credentials file of type \"%.40s\"; keyless reads a "
                                  "service account's key file (\"service_account\"), a user's application default "
                                  "credentials (\"authorized_user\", or \"impersonated_service_account\" acting as "
                                  "a service account), workload identity federation (\"external_account\"), or "
                                  "\"gcp-metadata\" for the metadata server",
                               type ? type : "(none)");
    cJSON_Delete(o);
    return rc;
}

/* ---- minting a token ---- */

static char *base64url(kl_arena *a, const unsigned char *d, size_t n)
{
    char *s = kl_arena_alloc_raw(a, 4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)s, d, (int)n);
    while (len > 0 && s[len - 1] == '=')
        len--;
    s[len] = '\0';
    for (char *c = s; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    return s;
}

static char *json_part(kl_arena *a, cJSON *o)
{
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        abort();
    char *r = base64url(a, (const unsigned char *)text, strlen(text));
    free(text);
    return r;
}

/* The signed assertion (RFC 7523) Google exchanges for an access token. */
static char *assertion(kl_arena *a, const struct kl_gcp_cred *sa, time_t now, const char **why)
{
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "alg", "RS256");
    cJSON_AddStringToObject(h, "typ", "JWT");
    if (sa->key_id)
        cJSON_AddStringToObject(h, "kid", sa->key_id);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "iss", sa->email);
    cJSON_AddStringToObject(c, "scope", KL_GCP_SCOPE);
    cJSON_AddStringToObject(c, "aud", sa->token_uri);
    cJSON_AddNumberToObject(c, "iat", (double)now);
    cJSON_AddNumberToObject(c, "exp", (double)(now + 3600));
    char *input = kl_arena_concat(a, json_part(a, h), ".", json_part(a, c), NULL);
    EVP_PKEY *k = load_key(sa->private_key);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    char *jwt = NULL;
    if (k && md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1)
        jwt = kl_arena_concat(a, input, ".", base64url(a, sig, siglen), NULL);
    else
        *why = "the service account key cannot sign (an RSA key is needed)";
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return jwt;
}

/* The metadata server answers only requests that say this. */
static const char *const metadata_headers[] = {"Metadata-Flavor: Google", NULL};

char *kl_gcp_url_escaped(kl_arena *a, const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        abort();
    char *r = kl_arena_strdup(a, e);
    OPENSSL_cleanse(e, strlen(e)); /* s may be a credential */
    curl_free(e);
    return r;
}

/* The request body that asks cred's token endpoint for a token; NULL for
 * the metadata server (a GET), or with *why when it cannot be made. */
static char *token_form(kl_arena *a, const struct kl_gcp_cred *cred, const char **why)
{
    switch (cred->source) {
    case KL_GCP_SERVICE_ACCOUNT: {
        char *jwt = assertion(a, cred, time(NULL), why);
        return jwt ? kl_arena_concat(a, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
                                     jwt, NULL)
                   : NULL;
    }
    case KL_GCP_AUTHORIZED_USER:
        return kl_arena_concat(a, "grant_type=refresh_token&client_id=", kl_gcp_url_escaped(a, cred->client_id),
                               "&client_secret=", kl_gcp_url_escaped(a, cred->client_secret), "&refresh_token=",
                               kl_gcp_url_escaped(a, cred->refresh_token), NULL);
    case KL_GCP_METADATA:
    case KL_GCP_EXTERNAL_ACCOUNT:
    case KL_GCP_IMPERSONATED:
        break;
    }
    return NULL;
}

/* The metadata server's project, for a credential whose token comes from
 * it: 0 with *project (malloc), or -1 with err. */
static int metadata_project(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **project, char *err,
                            size_t errlen)
{
    kl_arena a;
    kl_arena_init(&a);
    const char *base = strstr(cred->token_uri, METADATA_PATH);
    const char *url = kl_arena_printf(&a, "%.*s%sproject/project-id", base ? (int)(base - cred->token_uri) : 0,
                                      cred->token_uri, METADATA_PATH);
    struct kl_sync_req q = {.method = "GET", .url = url, .headers = metadata_headers, .no_proxy = true};
    struct kl_sync_reply r;
    int result = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        size_t n = r.body ? strspn(r.body, "abcdefghijklmnopqrstuvwxyz0123456789-.:") : 0;
        if (r.status != 200 || !n || n > 100 || (r.body[n] && !strchr("\r\n", r.body[n]))) {
            snprintf(err, errlen, "GET %s: HTTP %ld, no project id", url, r.status);
        } else {
            *project = strndup(r.body, n);
            if (!*project)
                abort();
            result = 0;
        }
        kl_sync_reply_free(&r);
    }
    kl_arena_free(&a);
    return result;
}

int kl_gcp_oauth_answer(const char *verb, const char *url, const struct kl_sync_reply *r, char **token,
                        long *lifetime_s, char *err, size_t errlen)
{
    int result = -1;
    cJSON *j = r->body ? cJSON_Parse(r->body) : NULL;
    const char *tok = kl_gcp_field(j, "access_token");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    if (r->status != 200 || !tok) {
        /* Google's error names the problem (invalid_grant: the key was
         * deleted, the clock is off, the refresh token was revoked, the
         * subject token's audience is wrong); it never echoes the
         * assertion, the refresh token or the subject token */
        const char *error = kl_gcp_field(j, "error"), *desc = kl_gcp_field(j, "error_description");
        snprintf(err, errlen, "%s %s: HTTP %ld%s%.100s%s%.300s", verb, url, r->status, error ? " " : "",
                 error ? error : "", desc ? ": " : "", desc ? desc : "");
        if (r->status == 200)
            snprintf(err, errlen, "%s %s: the answer has no access_token", verb, url);
    } else {
        *token = strdup(tok);
        if (!*token)
            abort();
        /* Google's are 3599 s; anything out of reason is held to a day */
        *lifetime_s = cJSON_IsNumber(exp) && exp->valuedouble >= 1 ? (exp->valuedouble < 86400 ? (long)exp->valuedouble
                                                                                             : 86400)
                                                                   : 3600;
        result = 0;
    }
    if (tok) /* the token's copy in the tree is wiped like the reply */
        OPENSSL_cleanse((char *)tok, strlen(tok));
    cJSON_Delete(j);
    return result;
}

void kl_gcp_wipe_free(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

int kl_gcp_impersonate(const char *url, const char *bearer, const cJSON *delegates, long lifetime_s_asked,
                       const atomic_bool *stop, char **token, long *lifetime_s, char *err, size_t errlen)
{
    kl_arena a;
    kl_arena_init(&a);
    char *auth = kl_arena_concat(&a, "Authorization: Bearer ", bearer, NULL);
    const char *h[] = {auth, "Content-Type: application/json", NULL};
    cJSON *req = cJSON_CreateObject();
    cJSON_AddItemToObject(req, "scope", cJSON_CreateStringArray((const char *const[]){KL_GCP_SCOPE}, 1));
    if (cJSON_GetArraySize(delegates) > 0)
        cJSON_AddItemToObject(req, "delegates", cJSON_Duplicate(delegates, true));
    cJSON_AddStringToObject(req, "lifetime", kl_arena_printf(&a, "%lds", lifetime_s_asked));
    const char *body = kl_json_print_arena(&a, req, "", ""); /* req freed */
    char shown[512]; /* without a user, password or query: the log's */
    kl_sync_url_shown(shown, sizeof(shown), url);
    struct kl_sync_req q = {.method = "POST", .url = url, .shown = shown, .body = body, .headers = h};
    struct kl_sync_reply r;
    int result = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        cJSON *j = r.body ? cJSON_Parse(r.body) : NULL;
        const char *tok = kl_gcp_field(j, "accessToken"), *expiry = kl_gcp_field(j, "expireTime");
        int64_t expires_ms = kl_iso8601_ms(expiry);
        int64_t left_s = expires_ms / 1000 - (int64_t)time(NULL);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (r.status != 200 || !tok) {
            /* IAM's error: {"error": {"code", "message", "status"}} */
            const char *status = kl_gcp_field(e, "status"), *message = kl_gcp_field(e, "message");
            snprintf(err, errlen, "POST %s: HTTP %ld%s%.40s%s%.300s", shown, r.status, status ? " " : "",
                     status ? status : "", message ? ": " : "", message ? message : "");
            if (r.status == 200)
                snprintf(err, errlen, "POST %s: the answer has no accessToken", shown);
        } else if (!expires_ms) {
            snprintf(err, errlen, "POST %s: the answer has no expireTime", shown);
        } else if (left_s < 60) {
            snprintf(err, errlen, "POST %s: the token's expireTime %.40s is past, or this machine's clock is off", shown,
                     expiry);
        } else {
            *token = strdup(tok);
            if (!*token)
                abort();
            /* no longer than asked for, whatever this machine's clock says */
            *lifetime_s = left_s < lifetime_s_asked ? (long)left_s : lifetime_s_asked;
            result = 0;
        }
        if (tok)
            OPENSSL_cleanse((char *)tok, strlen(tok));
        cJSON_Delete(j);
        kl_sync_reply_free(&r);
    }
    OPENSSL_cleanse(auth, strlen(auth));
    kl_arena_free(&a);
    return result;
}

static int mint(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **token, long *lifetime_s,
                char **project, char *err, size_t errlen);

/* The source's token (a user's, or a key's), then the account's for it. */
static int impersonated_mint(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **token,
                             long *lifetime_s, char *err, size_t errlen)
{
    cJSON *o = cJSON_Parse(cred->external);
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred src;
    const char *why = NULL;
    char *source_token = NULL;
    long source_life;
    int result = -1;
    if (impersonation_source(o, &a, &src, &why) < 0) /* it was accepted once: not expected */
        snprintf(err, errlen, "%s", why);
    else
        result = mint(&src, stop, &source_token, &source_life, NULL, err, errlen);
    if (result == 0)
        result = kl_gcp_impersonate(kl_gcp_field(o, "service_account_impersonation_url"), source_token,
                                    cJSON_GetObjectItemCaseSensitive(o, "delegates"), 3600, stop, token, lifetime_s,
                                    err, errlen);
    kl_gcp_wipe_free(source_token);
    wipe_source(&src);
    kl_json_wipe_strings(o);
    cJSON_Delete(o);
    kl_arena_free(&a);
    return result;
}

/* Get a fresh token from cred's source: 0 with *token (malloc) and
 * *lifetime_s (and, from the metadata server, its project in *project
 * unless project is NULL: known already), or -1 with err. Neither the
 * assertion, the refresh token, the subject token nor the access token is
 * ever written to a log. */
static int mint(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **token, long *lifetime_s,
                char **project, char *err, size_t errlen)
{
    if (cred->source == KL_GCP_EXTERNAL_ACCOUNT)
        return kl_gcp_external_mint(cred, stop, token, lifetime_s, err, errlen);
    if (cred->source == KL_GCP_IMPERSONATED)
        return impersonated_mint(cred, stop, token, lifetime_s, err, errlen);
    kl_arena a;
    kl_arena_init(&a);
    const char *why = NULL;
    bool metadata = cred->source == KL_GCP_METADATA;
    char *form = token_form(&a, cred, &why);
    if (!form && !metadata) {
        snprintf(err, errlen, "%s", why);
        kl_arena_free(&a);
        return -1;
    }
    char shown[512]; /* without a user, password or query: the log's */
    kl_sync_url_shown(shown, sizeof(shown), cred->token_uri);
    struct kl_sync_req q = {.method = form ? "POST" : "GET", .url = cred->token_uri, .shown = shown, .body = form,
                            .headers = metadata ? metadata_headers : NULL, .no_proxy = metadata};
    struct kl_sync_reply r;
    int result = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        result = kl_gcp_oauth_answer(q.method, shown, &r, token, lifetime_s, err, errlen);
        /* no token without the project its requests go to */
        if (result == 0 && metadata && project && metadata_project(cred, stop, project, err, errlen) < 0) {
            kl_gcp_wipe_free(*token);
            *token = NULL;
            result = -1;
        }
        kl_sync_reply_free(&r);
    }
    if (form) /* the assertion or refresh token, wiped like the reply */
        OPENSSL_cleanse(form, strlen(form));
    kl_arena_free(&a);
    return result;
}

/* ---- the keeper ---- */

struct entry {
    struct entry *next;
    enum kl_gcp_source source;
    char *email, *key_id, *token_uri, *private_key;     /* own copies: snapshots come and go */
    char *client_id, *client_secret, *refresh_token;
    char *external;             /* an external account's file */
    char *project;              /* the metadata server's project, once learnt */
    char *token;                /* the current one, or NULL */
    int64_t usable_ms;          /* the token is handed out until then: a minute (a tenth of its life) before it expires */
    int64_t due_ms;             /* the next try */
    bool kept;                  /* the current configuration uses it (else it is no longer renewed) */
    bool was_kept;              /* the one before did (kl_gcp_tokens_keep) */
    int failures;
    bool tried;                 /* at least one try finished */
    bool busy;                  /* a try runs (renew_main) */
    bool renewing;              /* renewer is to be joined: busy, or its try ended */
    pthread_t renewer;
    char error[512];            /* the last failure, "" after a success */
};

struct kl_gcp_tokens {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* new work, a try finished, or stop */
    pthread_t thread;
    atomic_bool stop;
    struct entry *entries;
};

/* Expiry is judged on CLOCK_BOOTTIME: unlike CLOCK_MONOTONIC, it counts the
 * time a suspended virtual machine was asleep, while tokens kept aging. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static struct entry *find(kl_gcp_tokens *t, const struct kl_gcp_cred *c)
{
    for (struct entry *e = t->entries; e; e = e->next)
        if (e->source == c->source && same(e->email, c->email) && same(e->key_id, c->key_id) &&
            same(e->token_uri, c->token_uri) && same(e->private_key, c->private_key) &&
            same(e->client_id, c->client_id) && same(e->client_secret, c->client_secret) &&
            same(e->refresh_token, c->refresh_token) && same(e->external, c->external))
            return e;
    return NULL;
}

static char *dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void entry_free(struct entry *e)
{
    free(e->email);
    free(e->key_id);
    free(e->token_uri);
    kl_gcp_wipe_free(e->private_key);
    free(e->client_id);
    kl_gcp_wipe_free(e->client_secret);
    kl_gcp_wipe_free(e->refresh_token);
    kl_gcp_wipe_free(e->external); /* a url source's headers may hold a secret */
    free(e->project);
    kl_gcp_wipe_free(e->token);
    free(e);
}

/* A credential the configuration no longer uses is dropped, its secrets
 * wiped, once its token is no longer handed out (until then requests of
 * the configuration before may still ask for it); *next: when the next one
 * is due to go. Only the keeper's thread drops one, and never one whose
 * try runs: that try holds it without the lock. */
static void drop_unused(kl_gcp_tokens *t, int64_t now, int64_t *next)
{
    for (struct entry **p = &t->entries, *e; (e = *p);) {
        if (e->kept || e->renewing || (e->token && e->usable_ms > now)) {
            /* one whose try runs is looked at again when it ends (the try
             * wakes the keeper); its token's end may be past already */
            if (!e->kept && e->usable_ms > now && e->usable_ms < *next)
                *next = e->usable_ms;
            p = &e->next;
            continue;
        }
        *p = e->next;
        entry_free(e);
    }
}

size_t kl_gcp_tokens_held(kl_gcp_tokens *t)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (struct entry *e = t->entries; e; e = e->next)
        n++;
    pthread_mutex_unlock(&t->lock);
    return n;
}

struct renewal {
    kl_gcp_tokens *t;
    struct entry *e;
};

/* A try that failed (t's lock held): the next after 1, 2, 4 ... 60 s. */
static void failed(kl_gcp_tokens *t, struct entry *e, int64_t now, const char *err)
{
    int64_t delay = (int64_t)1000 << (e->failures < 6 ? e->failures : 6);
    e->due_ms = now + (delay < 60000 ? delay : 60000);
    e->failures++;
    snprintf(e->error, sizeof(e->error), "%s", err);
    if (!atomic_load(&t->stop)) /* a try the stop aborted is no news */
        kl_warn("Google access token for %s: %s", e->email, err);
}

/* One try for one credential, in a thread of its own: a token endpoint or
 * an external account's program that hangs (up to 120 s) holds up no other
 * credential's renewal (a metadata server's cached token may have only 5
 * minutes left when it is handed out, renewed with 75 s of them). A token
 * is renewed when a quarter of its life is left (15 minutes of an hour's),
 * and a failed try is repeated after 1, 2, 4 ... 60 seconds while the old
 * token, if any, is still used. */
static void *renew_main(void *arg)
{
    struct renewal *job = arg;
    kl_gcp_tokens *t = job->t;
    struct entry *e = job->e; /* not removed, nor its strings changed, while busy */
    free(job);
    pthread_mutex_lock(&t->lock);
    struct kl_gcp_cred cred = {.source = e->source, .email = e->email, .key_id = e->key_id,
                               .token_uri = e->token_uri, .private_key = e->private_key,
                               .client_id = e->client_id, .client_secret = e->client_secret,
                               .refresh_token = e->refresh_token, .external = e->external};
    char *project = NULL;
    bool want_project = !e->project;
    pthread_mutex_unlock(&t->lock);
    char *token = NULL, err[512] = "";
    long life = 0;
    int rc = mint(&cred, &t->stop, &token, &life, want_project ? &project : NULL, err, sizeof(err));
    pthread_mutex_lock(&t->lock);
    if (project && !e->project)
        e->project = project;
    else
        free(project);
    int64_t now = mono_ms();
    if (rc == 0) {
        kl_gcp_wipe_free(e->token);
        e->token = token;
        int64_t life_ms = (int64_t)life * 1000;
        e->usable_ms = now + life_ms - (life_ms / 10 < 60000 ? life_ms / 10 : 60000);
        e->due_ms = now + life_ms * 3 / 4;
        e->failures = 0;
        if (e->error[0])
            kl_info("Google access token for %s: obtained again", e->email);
        e->error[0] = '\0';
    } else {
        failed(t, e, now, err);
    }
    e->tried = true;
    e->busy = false;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* Starts each kept credential's try when it is due (renew_main), and joins
 * the threads of tries that ended. */
static void *keeper_main(void *arg)
{
    kl_gcp_tokens *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        int64_t now = mono_ms();
        int64_t next = now + 60000;
        for (struct entry *e = t->entries; e; e = e->next)
            if (e->renewing && !e->busy) {
                pthread_join(e->renewer, NULL); /* it has let go of the lock: done */
                e->renewing = false;
            }
        drop_unused(t, now, &next);
        for (struct entry *e = t->entries; e; e = e->next) {
            if (!e->kept || e->renewing)
                continue;
            if (e->due_ms <= now) {
                struct renewal *job = malloc(sizeof(*job));
                if (!job)
                    abort();
                *job = (struct renewal){t, e};
                e->busy = e->renewing = true;
                int rc = pthread_create(&e->renewer, NULL, renew_main, job);
                if (rc == 0) {
                    pthread_setname_np(e->renewer, "kl-gcp-renew");
                    continue;
                }
                /* no thread (a pids limit reached): a failed try, repeated
                 * as one, rather than the gateway's end */
                free(job);
                e->busy = e->renewing = false;
                char err[128];
                snprintf(err, sizeof(err), "no thread to renew it: %s", strerror(rc));
                failed(t, e, now, err);
                e->tried = true;
                pthread_cond_broadcast(&t->cond);
                if (e->due_ms < next)
                    next = e->due_ms;
            } else if (e->due_ms < next) {
                next = e->due_ms;
            }
        }
        struct timespec ts = kl_mono_deadline(next - now);
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

kl_gcp_tokens *kl_gcp_tokens_start(void)
{
    kl_gcp_tokens *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, keeper_main, t) != 0)
        abort();
    pthread_setname_np(t->thread, "kl-gcp-tokens");
    return t;
}

void kl_gcp_tokens_keep(kl_gcp_tokens *t, const struct kl_gcp_cred *const *creds, size_t n)
{
    pthread_mutex_lock(&t->lock);
    for (struct entry *e = t->entries; e; e = e->next) {
        e->was_kept = e->kept;
        e->kept = false;
    }
    for (size_t i = 0; i < n; i++) {
        struct entry *e = find(t, creds[i]);
        if (!e) {
            e = calloc(1, sizeof(*e));
            if (!e)
                abort();
            e->source = creds[i]->source;
            e->email = dup_or_null(creds[i]->email);
            e->key_id = dup_or_null(creds[i]->key_id);
            e->token_uri = dup_or_null(creds[i]->token_uri);
            e->private_key = dup_or_null(creds[i]->private_key);
            e->client_id = dup_or_null(creds[i]->client_id);
            e->client_secret = dup_or_null(creds[i]->client_secret);
            e->refresh_token = dup_or_null(creds[i]->refresh_token);
            e->external = dup_or_null(creds[i]->external);
            e->due_ms = mono_ms();
            e->next = t->entries;
            t->entries = e;
        } else if (!e->was_kept && !e->kept && e->usable_ms <= mono_ms()) {
            e->due_ms = mono_ms(); /* used again after a while unused: renewed now */
        }
        e->kept = true;
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

void kl_gcp_tokens_wait(kl_gcp_tokens *t, int ms)
{
    int64_t until = mono_ms() + ms;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        bool all = true;
        for (struct entry *e = t->entries; e; e = e->next)
            all &= e->tried || !e->kept;
        int64_t left = until - mono_ms();
        if (all || left <= 0)
            break;
        struct timespec ts = kl_mono_deadline(left);
        if (pthread_cond_timedwait(&t->cond, &t->lock, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&t->lock);
}

const char *kl_gcp_token(kl_gcp_tokens *t, const struct kl_gcp_cred *cred, kl_arena *a, const char **problem,
                         const char **project)
{
    const char *r = NULL;
    *project = cred->project_id;
    pthread_mutex_lock(&t->lock);
    struct entry *e = find(t, cred);
    /* what went wrong is in the log; a caller is not told the account, the
     * token endpoint or Google's words */
    if (e && e->token && e->usable_ms > mono_ms()) {
        r = kl_arena_strdup(a, e->token);
        if (e->project)
            *project = kl_arena_strdup(a, e->project);
    }
    else if (e && e->error[0])
        *problem = "no Google access token: the token endpoint refused or failed (the gateway's log says why)";
    else
        *problem = "no Google access token yet";
    pthread_mutex_unlock(&t->lock);
    return r;
}

void kl_gcp_tokens_each(kl_gcp_tokens *t, void (*fn)(void *arg, const char *account, int64_t seconds_left,
                                                      int failures), void *arg)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    int64_t now = mono_ms();
    for (struct entry *e = t->entries; e; e = e->next)
        if (e->kept)
            fn(arg, e->email, e->token && e->usable_ms > now ? (e->usable_ms - now) / 1000 : 0, e->failures);
    pthread_mutex_unlock(&t->lock);
}

void kl_gcp_tokens_stop(kl_gcp_tokens *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->stop, true);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    for (struct entry *e = t->entries, *next; e; e = next) {
        next = e->next;
        if (e->renewing) /* a try in flight ends at the stop flag (kl_sync_fetch, kl_run) */
            pthread_join(e->renewer, NULL);
        entry_free(e);
    }
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    free(t);
}
