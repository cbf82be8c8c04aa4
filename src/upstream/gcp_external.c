/* Workload identity federation: Google's "external_account" credentials
 * (AIP-4117), for keyless running outside Google Cloud. The file holds no
 * secret; it says where keyless finds a token its own platform gave it
 * (the subject token: a Kubernetes projected token in a file, Azure's
 * instance metadata at a URL, what an executable prints, or a
 * GetCallerIdentity request signed with the machine's AWS credentials),
 * which Google's STS exchanges (RFC 8693)
 * for a federated access token, and that, when the file says so, for a
 * service account's (IAM credentials' generateAccessToken). The keeper in
 * gcp.c calls kl_gcp_external_mint on its own thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/exchange.h"
#include "core/text.h"
#include "upstream/gcp_int.h"
#include "upstream/runcmd.h"
#include "upstream/sigv4.h"

#define MAX_SUBJECT (64 * 1024)

/* An external_account file's fields, pointing into its cJSON tree. */
struct external {
    const char *audience, *subject_token_type, *token_url;
    const char *file, *url;         /* where the subject token is read: one of the two (AWS: url is the
                                       credentials' metadata URL, or NULL) */
    const cJSON *headers;           /* sent to url: an object of strings, or NULL */
    const char *json_field;         /* the token is this field of a JSON document; NULL: the text itself */
    bool aws;                       /* environment_id "aws1": a signed GetCallerIdentity is the token */
    const char *region_url, *verify_url, *imdsv2_url;   /* AWS */
    const char *client_id, *client_secret;              /* the STS's client (HTTP Basic), or NULL */
    const char *impersonation_url;  /* a service account's generateAccessToken, or NULL */
    long lifetime_s;                /* asked for an impersonated token */
    const char *user_project;       /* a workforce pool's workforce_pool_user_project, or NULL */
    const char *command;            /* an executable source's command line, or NULL */
    long command_timeout_ms;
    const char *output_file;        /* where the executable caches its answer, or NULL */
};

/* A header from the file: its name a token, its value one line. */
static bool header_ok(const cJSON *h)
{
    const char *v = cJSON_GetStringValue(h);
    size_t n = h->string ? strlen(h->string) : 0;
    return v && n && n < 128 &&
           strspn(h->string, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") == n &&
           !strpbrk(v, "\r\n");
}

/* The AWS instance metadata service, as Google's libraries require it of
 * an AWS source's URLs: its IPv4 or IPv6 address (or this machine, for an
 * emulator). */
static bool imds_url_ok(const char *u)
{
    static const char *const hosts[] = {"169.254.169.254", "[fd00:ec2::254]", "127.0.0.1", "localhost", "[::1]", NULL};
    return kl_sync_url_ok(u, hosts, false);
}

/* credential_source {"environment_id": "aws1", ...}. */
static int aws_read(const cJSON *src, struct external *x, const char **why)
{
    const char *id = kl_gcp_field(src, "environment_id");
    if (!id || strcmp(id, "aws1") != 0) {
        *why = "the external_account credentials file's environment_id must be \"aws1\" (the only AWS version)";
        return -1;
    }
    x->aws = true;
    x->verify_url = kl_gcp_field(src, "regional_cred_verification_url");
    x->region_url = kl_gcp_field(src, "region_url");
    x->url = kl_gcp_field(src, "url");
    x->imdsv2_url = kl_gcp_field(src, "imdsv2_session_token_url");
    if (!x->verify_url || strncasecmp(x->verify_url, "https://", 8) != 0) {
        *why = "the external_account credentials file's AWS source needs an https:// regional_cred_verification_url";
        return -1;
    }
    if ((x->region_url && !imds_url_ok(x->region_url)) || (x->url && !imds_url_ok(x->url)) ||
        (x->imdsv2_url && !imds_url_ok(x->imdsv2_url))) {
        *why = "the external_account credentials file's AWS region_url, url and imdsv2_session_token_url must be the "
               "instance metadata service (http://169.254.169.254 or http://[fd00:ec2::254])";
        return -1;
    }
    if (kl_gcp_field(src, "file")) {
        *why = "the external_account credentials file's AWS source cannot also name a file";
        return -1;
    }
    return 1;
}

/* credential_source {"file": ...} or {"url": ..., "headers": ...}, with
 * its format. */
static int token_source_read(const cJSON *src, struct external *x, const char **why)
{
    x->file = kl_gcp_field(src, "file");
    x->url = kl_gcp_field(src, "url");
    if (!x->file == !x->url) {
        *why = "the external_account credentials file's credential_source must name one \"file\" or one \"url\" "
               "(or environment_id \"aws1\")";
        return -1;
    }
    if (x->url && strncasecmp(x->url, "http://", 7) != 0 && strncasecmp(x->url, "https://", 8) != 0) {
        *why = "the external_account credentials file's credential_source url must be http:// or https://";
        return -1;
    }
    x->headers = cJSON_GetObjectItemCaseSensitive(src, "headers");
    if (cJSON_IsNull(x->headers))
        x->headers = NULL;
    const cJSON *h;
    cJSON_ArrayForEach(h, x->headers) {
        if (!header_ok(h)) {
            *why = "the external_account credentials file's credential_source headers must be names with one-line "
                   "string values";
            return -1;
        }
    }
    if (x->headers && (!cJSON_IsObject(x->headers) || !x->url)) {
        *why = "the external_account credentials file's credential_source headers must be an object, with a url";
        return -1;
    }
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(src, "format");
    const char *type = kl_gcp_field(format, "type");
    if (format && !cJSON_IsObject(format)) {
        *why = "the external_account credentials file's credential_source format must be an object";
        return -1;
    }
    if (type && strcmp(type, "json") == 0 && !(x->json_field = kl_gcp_field(format, "subject_token_field_name"))) {
        *why = "the external_account credentials file's json format has no subject_token_field_name";
        return -1;
    }
    if (type && strcmp(type, "json") != 0 && strcmp(type, "text") != 0) {
        *why = "the external_account credentials file's credential_source format must be \"text\" or \"json\"";
        return -1;
    }
    return 1;
}

/* An executable source (Google's "pluggable auth"): a command (its
 * program an absolute path), its time limit, and the file where it
 * caches its answer. */
static int executable_read(const cJSON *src, struct external *x, const char **why)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(src, "executable");
    x->command = kl_gcp_field(e, "command");
    x->output_file = kl_gcp_field(e, "output_file");
    x->command_timeout_ms = 30000;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "timeout_millis");
    if (!x->command || x->command[0] != '/') {
        *why = "the external_account credentials file's executable needs a \"command\" that starts with the "
               "program's absolute path";
        return -1;
    }
    if (t && (!cJSON_IsNumber(t) || t->valuedouble < 5000 || t->valuedouble > 120000)) {
        *why = "the external_account credentials file's executable timeout_millis must be from 5000 to 120000";
        return -1;
    }
    if (t)
        x->command_timeout_ms = (long)t->valuedouble;
    return 1;
}

/* Reads and checks an external_account file: the same checks when the
 * configuration is read and before each token, so a token is only asked
 * for as the file was accepted. */
static int external_read(const cJSON *o, kl_arena *a, struct external *x, const char **why)
{
    memset(x, 0, sizeof(*x));
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(o, "credential_source");
    const char *universe = kl_gcp_field(o, "universe_domain");
    x->audience = kl_gcp_field(o, "audience");
    x->subject_token_type = kl_gcp_field(o, "subject_token_type");
    x->token_url = kl_gcp_field(o, "token_url");
    if (!x->token_url)
        x->token_url = kl_arena_concat(a, "https://sts.", universe ? universe : "googleapis.com", "/v1/token", NULL);
    x->impersonation_url = kl_gcp_field(o, "service_account_impersonation_url");
    x->user_project = kl_gcp_field(o, "workforce_pool_user_project");
    x->client_id = kl_gcp_field(o, "client_id");
    x->client_secret = kl_gcp_field(o, "client_secret");
    x->lifetime_s = 3600;
    if (!x->audience || !x->subject_token_type || !cJSON_IsObject(src)) {
        *why = "the external_account credentials file has no audience, subject_token_type or credential_source";
        return -1;
    }
    if (!kl_gcp_url_safe(x->token_url) || (x->impersonation_url && !kl_gcp_url_safe(x->impersonation_url))) {
        *why = "the external_account credentials file's token_url and service_account_impersonation_url must be "
               "https:// (or http:// to this machine): the tokens sent there are credentials";
        return -1;
    }
    if (x->user_project && !strstr(x->audience, "/workforcePools/")) {
        *why = "the external_account credentials file's workforce_pool_user_project is for a workforce pool's "
               "audience (//iam.googleapis.com/locations/LOCATION/workforcePools/...)";
        return -1;
    }
    if (!x->client_id != !x->client_secret) {
        *why = "the external_account credentials file has a client_id without a client_secret, or the reverse";
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(src, "certificate")) {
        *why = "the external_account credentials file's credential_source is a certificate (X.509); keyless reads a "
               "token from a \"file\", a \"url\", an \"executable\", or AWS (environment_id \"aws1\")";
        return -1;
    }
    int rc = cJSON_GetObjectItemCaseSensitive(src, "environment_id") ? aws_read(src, x, why)
             : cJSON_GetObjectItemCaseSensitive(src, "executable")   ? executable_read(src, x, why)
                                                                     : token_source_read(src, x, why);
    if (rc < 0)
        return -1;
    const cJSON *life = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "service_account_impersonation"), "token_lifetime_seconds");
    if (life) {
        if (!cJSON_IsNumber(life) || life->valuedouble < 600 || life->valuedouble > 43200 ||
            life->valuedouble != (double)(long)life->valuedouble) {
            *why = "the external_account credentials file's token_lifetime_seconds must be whole seconds from 600 "
                   "to 43200";
            return -1;
        }
        x->lifetime_s = (long)life->valuedouble;
    }
    return 1;
}

/* The name /metrics and the log give an external account: the service
 * account it acts as, else its pool's provider (the audience names no
 * secret). */
static const char *external_name(kl_arena *a, const struct external *x)
{
    const char *sa = x->impersonation_url ? strstr(x->impersonation_url, "serviceAccounts/") : NULL;
    size_t n = sa ? strcspn(sa + strlen("serviceAccounts/"), ":/?#") : 0;
    if (n)
        return kl_arena_printf(a, "external_account:%.*s", (int)n, sa + strlen("serviceAccounts/"));
    const char *aud = x->audience;
    if (strncmp(aud, "//iam.googleapis.com/", 21) == 0)
        aud += 21;
    return kl_arena_concat(a, "external_account:", aud, NULL);
}

int kl_gcp_external_parse(const cJSON *o, kl_arena *a, struct kl_gcp_cred *out, const char **why)
{
    struct external x;
    if (external_read(o, a, &x, why) < 0)
        return -1;
    /* kept whole, compact, to be read again for each token: the same file
     * indented otherwise is the same credential */
    char *text = cJSON_PrintUnformatted(o);
    if (!text)
        abort();
    out->source = KL_GCP_EXTERNAL_ACCOUNT;
    out->email = external_name(a, &x);
    out->token_uri = kl_arena_strdup(a, x.token_url);
    out->external = kl_arena_strdup(a, text);
    OPENSSL_cleanse(text, strlen(text)); /* a client_secret, a URL source's headers */
    free(text);
    return 1;
}

/* ---- the subject token ---- */


/* Leading and trailing white space off s, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && strchr(" \n\r\t", s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* The "error" and "error_description" (OAuth) an identity provider may
 * give with a refusal, for the log. */
static void idp_error(const char *body, char *out, size_t outlen)
{
    cJSON *j = body ? cJSON_Parse(body) : NULL;
    const char *e = kl_gcp_field(j, "error"), *d = kl_gcp_field(j, "error_description");
    snprintf(out, outlen, "%s%.100s%s%.200s", e ? " " : "", e ? e : "", d ? ": " : "", d ? d : "");
    cJSON_Delete(j);
}

/* GET url with headers (NULL-terminated) for a credential: 0 with *body
 * (malloc, NUL-terminated, no NUL inside), or -1 with err naming what was
 * asked for. */
static int get_text(const char *method, const char *url, const char *const *headers, const char *what,
                    const atomic_bool *stop, char **body, char *err, size_t errlen)
{
    char shown[512];
    kl_sync_url_shown(shown, sizeof(shown), url);
    struct kl_sync_req q = {.method = method, .url = url, .shown = shown, .headers = headers,
                            .no_proxy = imds_url_ok(url)};
    struct kl_sync_reply r;
    char why[768];
    if (kl_sync_fetch(&q, stop, &r, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s (%s)", why, what);
        return -1;
    }
    if (r.status != 200 || !r.body || strlen(r.body) != r.len) {
        char idp[320];
        idp_error(r.status != 200 ? r.body : NULL, idp, sizeof(idp));
        snprintf(err, errlen, "%s %s (%s): HTTP %ld%s%s", method, shown, what, r.status, idp,
                 r.status != 200 ? "" : !r.body ? ", empty" : ", a NUL byte in it");
        kl_sync_reply_free(&r);
        return -1;
    }
    *body = r.body; /* now the caller's */
    return 0;
}

/* A subject token from a file or a URL, as the file's format says: 0 with
 * *out (malloc), or -1 with err. */
static int file_or_url_token(const struct external *x, const atomic_bool *stop, char **out, char *err,
                             size_t errlen)
{
    char *text = NULL;
    if (x->file) {
        if (kl_sync_read_file("the token file", x->file, MAX_SUBJECT, &text, err, errlen) < 0)
            return -1;
    } else {
        kl_arena a;
        kl_arena_init(&a);
        size_t n = 0;
        char **h = kl_arena_alloc(&a, (size_t)(cJSON_GetArraySize(x->headers) + 1) * sizeof(*h));
        const cJSON *i;
        cJSON_ArrayForEach(i, x->headers)
            h[n++] = kl_arena_concat(&a, i->string, ": ", cJSON_GetStringValue(i), NULL);
        h[n] = NULL;
        int rc = get_text("GET", x->url, (const char *const *)h, "the subject token", stop, &text, err, errlen);
        for (size_t k = 0; k < n; k++) /* a header may be a credential */
            OPENSSL_cleanse(h[k], strlen(h[k]));
        kl_arena_free(&a);
        if (rc < 0)
            return -1;
    }
    char shown[512];
    if (x->url)
        kl_sync_url_shown(shown, sizeof(shown), x->url);
    const char *where = x->file ? x->file : shown;
    char *tok = NULL;
    if (x->json_field) {
        cJSON *j = cJSON_Parse(text);
        const char *v = kl_gcp_field(j, x->json_field);
        if (v) {
            tok = strdup(v);
            OPENSSL_cleanse((char *)v, strlen(v));
        } else {
            snprintf(err, errlen, "the subject token at %s: not JSON with a string \"%.60s\"", where, x->json_field);
        }
        cJSON_Delete(j);
    } else if (*trim(text)) {
        tok = strdup(trim(text));
    } else {
        snprintf(err, errlen, "the subject token at %s: empty", where);
    }
    kl_gcp_wipe_free(text);
    if (!tok)
        return -1;
    *out = tok;
    return 0;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The AWS credentials and region an "aws1" source signs with, as Google's
 * libraries find them: the environment's, else the instance metadata
 * service at the file's URLs (with an IMDSv2 session token when the file
 * names its URL). Strings in a; 0, or -1 with err. */
static int aws_identity(const struct external *x, kl_arena *a, const atomic_bool *stop, struct kl_sigv4_cred *c,
                        char *err, size_t errlen)
{
    c->service = "sts";
    c->region = env("AWS_REGION") ? env("AWS_REGION") : env("AWS_DEFAULT_REGION");
    /* copies: the environment's own strings are never wiped (the AWS
     * keeper and the next token read them again) */
    bool env_keys = env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY");
    if (env_keys) {
        c->access_key_id = kl_arena_strdup(a, env("AWS_ACCESS_KEY_ID"));
        c->secret = kl_arena_strdup(a, env("AWS_SECRET_ACCESS_KEY"));
        c->session_token = env("AWS_SESSION_TOKEN") ? kl_arena_strdup(a, env("AWS_SESSION_TOKEN")) : NULL;
    }
    const char *h[2] = {NULL, NULL};
    char *text = NULL;
    if ((!c->region || !env_keys) && x->imdsv2_url) {
        const char *ttl[] = {"X-aws-ec2-metadata-token-ttl-seconds: 300", NULL};
        if (get_text("PUT", x->imdsv2_url, ttl, "an IMDSv2 session token", stop, &text, err, errlen) < 0)
            return -1;
        h[0] = kl_arena_concat(a, "X-aws-ec2-metadata-token: ", trim(text), NULL);
        kl_gcp_wipe_free(text);
    }
    if (!c->region) {
        if (!x->region_url) {
            snprintf(err, errlen, "no AWS region: AWS_REGION, AWS_DEFAULT_REGION, or the file's region_url");
            return -1;
        }
        if (get_text("GET", x->region_url, h, "the AWS availability zone", stop, &text, err, errlen) < 0)
            return -1;
        char *zone = trim(text);
        size_t n = strlen(zone);
        /* "us-east-1b": the region is the zone without its letter */
        if (n < 2 || strspn(zone, "abcdefghijklmnopqrstuvwxyz0123456789-") != n) {
            snprintf(err, errlen, "GET %s: not an availability zone", x->region_url);
            free(text);
            return -1;
        }
        c->region = kl_arena_strndup(a, zone, n - 1);
        free(text);
    }
    if (!env_keys) {
        if (!x->url) {
            snprintf(err, errlen, "no AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the file's url");
            return -1;
        }
        if (get_text("GET", x->url, h, "the instance profile's role", stop, &text, err, errlen) < 0)
            return -1;
        char *role = trim(text);
        role[strcspn(role, "\r\n")] = '\0';
        bool named = *role && !strpbrk(role, "/?#%");
        const char *creds_url = named ? kl_arena_concat(a, x->url, x->url[strlen(x->url) - 1] == '/' ? "" : "/",
                                                        role, NULL)
                                      : NULL;
        free(text);
        if (!named) {
            snprintf(err, errlen, "GET %s: no role name", x->url);
            return -1;
        }
        if (get_text("GET", creds_url, h, "the instance profile's credentials", stop, &text, err, errlen) < 0)
            return -1;
        cJSON *j = cJSON_Parse(text);
        const char *id = kl_gcp_field(j, "AccessKeyId"), *secret = kl_gcp_field(j, "SecretAccessKey"),
                   *token = kl_gcp_field(j, "Token");
        if (id && secret && !strpbrk(id, "\r\n") && !strpbrk(secret, "\r\n") && (!token || !strpbrk(token, "\r\n"))) {
            c->access_key_id = kl_arena_strdup(a, id);
            c->secret = kl_arena_strdup(a, secret);
            c->session_token = token ? kl_arena_strdup(a, token) : NULL;
        } else {
            snprintf(err, errlen, "GET %s: no AccessKeyId and SecretAccessKey", creds_url);
        }
        if (secret)
            OPENSSL_cleanse((char *)secret, strlen(secret));
        if (token)
            OPENSSL_cleanse((char *)token, strlen(token));
        cJSON_Delete(j);
        kl_gcp_wipe_free(text);
        if (!c->access_key_id)
            return -1;
    }
    return 0;
}

/* An "aws1" source's subject token: a POST to AWS STS's GetCallerIdentity,
 * signed (SigV4, covering x-goog-cloud-target-resource: the audience, so
 * the request is good for this pool only) but not sent: Google's STS sends
 * it and learns who signed. Serialized as Google's libraries do:
 * {"url", "method", "headers": [{"key", "value"}]}, percent-encoded. */
static int aws_token(const struct external *x, const atomic_bool *stop, char **out, char *err, size_t errlen)
{
    kl_arena a;
    kl_arena_init(&a);
    struct kl_sigv4_cred c = {0};
    if (aws_identity(x, &a, stop, &c, err, errlen) < 0) {
        kl_arena_free(&a);
        return -1;
    }
    const char *mark = strstr(x->verify_url, "{region}");
    const char *url = mark ? kl_arena_printf(&a, "%.*s%s%s", (int)(mark - x->verify_url), x->verify_url, c.region,
                                             mark + strlen("{region}"))
                           : x->verify_url;
    const char *sig[3];
    size_t n = kl_sigv4_headers_with(&a, &c, "POST", url, "", 0, time(NULL),
                                     kl_arena_concat(&a, "x-goog-cloud-target-resource:", x->audience, NULL), sig);
    const char *auth = url + strlen("https://");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "url", url);
    cJSON_AddStringToObject(o, "method", "POST");
    cJSON *hs = cJSON_AddArrayToObject(o, "headers");
    const char *names[] = {"host", "x-goog-cloud-target-resource"};
    const char *values[] = {kl_arena_strndup(&a, auth, strcspn(auth, "/?#")), x->audience};
    for (size_t i = 0; i < n + 2; i++) {
        cJSON *h = cJSON_CreateObject();
        const char *line = i < n ? sig[i] : NULL;
        /* "X-Amz-Date: …" → {"key": "x-amz-date", "value": "…"} */
        char *key = line ? kl_arena_strndup(&a, line, strcspn(line, ":")) : kl_arena_strdup(&a, names[i - n]);
        for (char *k = key; *k; k++)
            *k = (char)(*k >= 'A' && *k <= 'Z' ? *k - 'A' + 'a' : *k);
        cJSON_AddStringToObject(h, "key", key);
        cJSON_AddStringToObject(h, "value", line ? line + strlen(key) + 2 : values[i - n]);
        cJSON_AddItemToArray(hs, h);
    }
    char *json = cJSON_PrintUnformatted(o);
    kl_json_wipe_strings(o); /* the session token */
    cJSON_Delete(o);
    if (!json)
        abort();
    *out = strdup(kl_gcp_url_escaped(&a, json));
    if (!*out)
        abort();
    OPENSSL_cleanse(json, strlen(json)); /* the session token */
    free(json);
    /* the arena's copies of the secret and session token, and the signed
     * header lines (the token is one of them) */
    OPENSSL_cleanse((char *)c.secret, strlen(c.secret));
    if (c.session_token)
        OPENSSL_cleanse((char *)c.session_token, strlen(c.session_token));
    for (size_t i = 0; i < n; i++)
        OPENSSL_cleanse((char *)sig[i], strlen(sig[i]));
    kl_arena_free(&a);
    return 0;
}

/* ---- the exchange ---- */

/* The RFC 8693 exchange at the STS: 0 with *federated (malloc) and
 * *lifetime_s, or -1 with err. */
static int exchange(const struct external *x, const char *subject, const atomic_bool *stop, char **federated,
                    long *lifetime_s, char *err, size_t errlen)
{
    kl_arena a;
    kl_arena_init(&a);
    char *escaped = kl_gcp_url_escaped(&a, subject);
    /* a workforce pool's user project is billed for the exchange; with a
     * client, the client's project is (as Google's libraries do) */
    const char *options = "";
    if (x->user_project && !x->client_id) {
        cJSON *opt = cJSON_CreateObject();
        cJSON_AddStringToObject(opt, "userProject", x->user_project);
        options = kl_arena_concat(&a, "&options=", kl_gcp_url_escaped(&a, kl_json_print_arena(&a, opt, "", "")), NULL);
    }
    char *form = kl_arena_concat(
        &a,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        "&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&scope=",
        kl_gcp_url_escaped(&a, KL_GCP_SCOPE), "&audience=", kl_gcp_url_escaped(&a, x->audience),
        "&subject_token_type=", kl_gcp_url_escaped(&a, x->subject_token_type), "&subject_token=", escaped, options,
        NULL);
    char *basic = NULL;
    if (x->client_id) { /* RFC 6749's client authentication */
        const char *pair = kl_arena_concat(&a, x->client_id, ":", x->client_secret, NULL);
        basic = kl_arena_alloc(&a, 4 * ((strlen(pair) + 2) / 3) + 32);
        memcpy(basic, "Authorization: Basic ", 21);
        EVP_EncodeBlock((unsigned char *)basic + 21, (const unsigned char *)pair, (int)strlen(pair));
        OPENSSL_cleanse((char *)pair, strlen(pair));
    }
    const char *h[] = {basic, NULL};
    char shown[512]; /* without a user, password or query: the log's */
    kl_sync_url_shown(shown, sizeof(shown), x->token_url);
    struct kl_sync_req q = {.method = "POST", .url = x->token_url, .shown = shown, .body = form,
                            .headers = basic ? h : NULL};
    struct kl_sync_reply r;
    int result = -1;
    if (kl_sync_fetch(&q, stop, &r, err, errlen) == 0) {
        result = kl_gcp_oauth_answer("POST", shown, &r, federated, lifetime_s, err, errlen);
        kl_sync_reply_free(&r);
    }
    OPENSSL_cleanse(escaped, strlen(escaped));
    OPENSSL_cleanse(form, strlen(form));
    if (basic)
        OPENSSL_cleanse(basic, strlen(basic));
    kl_arena_free(&a);
    return result;
}

/* The field of an executable's answer that holds a token of type t (one
 * of the three Google's libraries accept), or NULL. */
static const char *answer_field(const char *t)
{
    if (!t)
        return NULL;
    if (strcmp(t, "urn:ietf:params:oauth:token-type:jwt") == 0 ||
        strcmp(t, "urn:ietf:params:oauth:token-type:id_token") == 0)
        return "id_token";
    return strcmp(t, "urn:ietf:params:oauth:token-type:saml2") == 0 ? "saml_response" : NULL;
}

/* The answer of an executable (or the one it cached in its output
 * file): {"version": 1, "success": true, "token_type": ..., "id_token"
 * or "saml_response": ..., "expiration_time": seconds}, or success false
 * with a "code" and a "message". 1 with *out (malloc) when it holds a
 * token that has not expired; 0 when it holds none (a cache file that is
 * stale or not an answer: the command runs); -2 with err when it is a
 * refusal (success false), -1 with err when it is no good answer. need_expiry: an output file is configured, so the answer
 * must say until when it holds (as Google's libraries require). */
static int executable_answer(const char *text, const char *where, bool cached, bool need_expiry, char **out,
                             char *err, size_t errlen)
{
    cJSON *j = cJSON_Parse(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "success");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expiration_time");
    const char *type = kl_gcp_field(j, "token_type");
    const char *field = answer_field(type);
    const char *tok = field ? kl_gcp_field(j, field) : NULL;
    int rc = -1;
    if (!cJSON_IsObject(j) || !cJSON_IsNumber(v) || v->valuedouble != 1 || !cJSON_IsBool(ok)) {
        snprintf(err, errlen, "%s: not an answer of version 1 with \"success\"", where);
        rc = cached ? 0 : -1;
    } else if (!cJSON_IsTrue(ok)) {
        const char *code = kl_gcp_field(j, "code"), *msg = kl_gcp_field(j, "message");
        snprintf(err, errlen, "%s: no token (code %.40s: %.300s)", where, code ? code : "none",
                 msg ? msg : "no message");
        rc = cached ? 0 : -2;
    } else if (cJSON_IsNumber(exp) && exp->valuedouble * 1000 <= (double)kl_wall_ms()) {
        snprintf(err, errlen, "%s: its token expired", where);
        rc = cached ? 0 : -1;
    } else if (need_expiry && !cJSON_IsNumber(exp)) {
        snprintf(err, errlen, "%s: no expiration_time, which an output_file needs", where);
        rc = cached ? 0 : -1;
    } else if (!field) {
        snprintf(err, errlen, "%s: token_type must be urn:ietf:params:oauth:token-type:jwt, id_token or saml2",
                 where);
    } else if (!tok) {
        snprintf(err, errlen, "%s: no %s", where, field);
    } else {
        *out = strdup(tok);
        if (!*out)
            abort();
        rc = 1;
    }
    kl_json_wipe_strings(j);
    cJSON_Delete(j);
    return rc;
}

/* A command line in words as Google's Node library splits it: at white
 * space, a "quoted part" kept whole without its quotes. false when it
 * has more than max words. */
static bool command_words(char *line, const char **argv, size_t max)
{
    size_t n = 0;
    char *r = line, *w = line;
    while (*r) {
        while (*r && strchr(" \t\n\r\f\v", *r))
            r++;
        if (!*r)
            break;
        if (n == max)
            return false;
        argv[n++] = w;
        while (*r && !strchr(" \t\n\r\f\v", *r)) {
            if (*r == '"') {
                for (r++; *r && *r != '"'; r++)
                    *w++ = *r;
                if (*r)
                    r++;
            } else {
                *w++ = *r++;
            }
        }
        if (*r)
            r++;
        *w++ = '\0';
    }
    argv[n] = NULL;
    return true;
}

/* The subject token from the executable: its cached answer when the
 * output file holds one still good, else a run of the command with the
 * variables Google's libraries give it. Running it needs
 * GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1, as there. */
static int executable_token(const struct external *x, const atomic_bool *stop, char **out, char *err,
                            size_t errlen)
{
    const char *allow = env("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES");
    if (!allow || strcmp(allow, "1") != 0) {
        snprintf(err, errlen, "the credentials file's executable runs only with "
                 "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1 in keyless's environment");
        return -1;
    }
    if (x->output_file) {
        char *text = NULL, ignore[256];
        if (kl_sync_read_file("the output file", x->output_file, MAX_SUBJECT, &text, ignore, sizeof(ignore)) == 0) {
            int rc = executable_answer(text, x->output_file, true, true, out, ignore, sizeof(ignore));
            kl_gcp_wipe_free(text);
            if (rc == 1)
                return 0;
        }
    }
    kl_arena a;
    kl_arena_init(&a);
    const char *argv[65];
    if (!command_words(kl_arena_strdup(&a, x->command), argv, 64)) {
        snprintf(err, errlen, "the executable's command has more than 64 words");
        kl_arena_free(&a);
        return -1;
    }
    const char *sa = x->impersonation_url ? strstr(x->impersonation_url, "serviceAccounts/") : NULL;
    if (sa)
        sa += strlen("serviceAccounts/");
    const char *envs[6];
    size_t ne = 0;
    envs[ne++] = kl_arena_concat(&a, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE=", x->audience, NULL);
    envs[ne++] = kl_arena_concat(&a, "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE=", x->subject_token_type, NULL);
    envs[ne++] = "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0";
    if (sa)
        envs[ne++] = kl_arena_printf(&a, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL=%.*s", (int)strcspn(sa, ":/?#"),
                                     sa);
    if (x->output_file)
        envs[ne++] = kl_arena_concat(&a, "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=", x->output_file, NULL);
    envs[ne] = NULL;
    struct kl_run_opts o = {.argv = argv, .extra_env = envs, .timeout_ms = x->command_timeout_ms};
    char *text = malloc(MAX_SUBJECT + 1), errout[512], why[200];
    if (!text)
        abort();
    int status = kl_run(&o, stop, text, MAX_SUBJECT + 1, errout, sizeof(errout), why, sizeof(why));
    int rc = -1;
    char *where = kl_arena_concat(&a, "the executable ", argv[0], "'s answer", NULL);
    if (status < 0) {
        snprintf(err, errlen, "the executable %.200s: %s", argv[0], why);
    } else if (status > 0) {
        /* a refusal is its JSON on stdout and a status that is not 0;
         * else the first line of what it wrote to stderr */
        char *ignore = NULL;
        if (executable_answer(text, where, false, false, &ignore, err, errlen) == -2) {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, ", status %d", status);
        } else {
            errout[strcspn(errout, "\r\n")] = '\0';
            snprintf(err, errlen, "the executable %.200s exited with status %d%s%.300s", argv[0], status,
                     errout[0] ? ": " : "", errout);
        }
        kl_gcp_wipe_free(ignore);
    } else {
        rc = executable_answer(text, where, false, x->output_file != NULL, out, err, errlen) == 1 ? 0 : -1;
    }
    OPENSSL_cleanse(text, MAX_SUBJECT + 1);
    free(text);
    kl_arena_free(&a);
    return rc;
}

int kl_gcp_external_mint(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **token, long *lifetime_s,
                         char *err, size_t errlen)
{
    cJSON *o = cJSON_Parse(cred->external);
    kl_arena a;
    kl_arena_init(&a);
    struct external x;
    const char *why = NULL;
    if (external_read(o, &a, &x, &why) < 0) { /* it was accepted once: not expected */
        snprintf(err, errlen, "%s", why);
        kl_json_wipe_strings(o);
        cJSON_Delete(o);
        kl_arena_free(&a);
        return -1;
    }
    char *subject = NULL, *federated = NULL;
    int result = x.aws       ? aws_token(&x, stop, &subject, err, errlen)
                 : x.command ? executable_token(&x, stop, &subject, err, errlen)
                             : file_or_url_token(&x, stop, &subject, err, errlen);
    if (result == 0)
        result = exchange(&x, subject, stop, &federated, lifetime_s, err, errlen);
    if (result == 0 && x.impersonation_url) {
        result = kl_gcp_impersonate(x.impersonation_url, federated, NULL, x.lifetime_s, stop, token, lifetime_s, err,
                                    errlen);
        kl_gcp_wipe_free(federated);
    } else if (result == 0) {
        *token = federated;
    }
    kl_gcp_wipe_free(subject);
    kl_json_wipe_strings(o);
    cJSON_Delete(o);
    kl_arena_free(&a);
    return result;
}
